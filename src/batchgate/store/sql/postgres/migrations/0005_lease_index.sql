-- 0.2: a batch's lease token is indexed only while a worker holds it: a queued or finished batch
-- has no entry to write or remove.
DROP INDEX batches_lease;
CREATE UNIQUE INDEX batches_lease ON batches (lease_token) WHERE lease_token IS NOT NULL;
