-- 0.2: a callback reads its batch's results when it is sent, instead of carrying a copy of them,
-- so a batch's results are stored once however often they are reposted. `body` stays for the
-- deliveries queued before; new ones leave it NULL. A restart now supersedes the callback still
-- waiting for the run before it ('superseded').
ALTER TABLE deliveries ALTER COLUMN body DROP NOT NULL;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'delivered', 'failed', 'gone', 'superseded'));
