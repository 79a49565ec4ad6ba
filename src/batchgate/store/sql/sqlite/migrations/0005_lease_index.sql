-- 0.2: a batch's lease token is indexed only while a worker holds it. A queued or finished batch
-- has no entry, so saving a batch, and finishing one, no longer writes one; and with tokens that
-- begin with the time they were made, a new lease goes at the end of the index, beside the ones
-- made with it, instead of on a page of its own.
DROP INDEX batches_lease;
CREATE UNIQUE INDEX batches_lease ON batches (lease_token) WHERE lease_token IS NOT NULL;
