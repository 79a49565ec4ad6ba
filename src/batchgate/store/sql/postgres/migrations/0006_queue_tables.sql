-- 0.2: batches and deliveries are queue tables: each row is updated several times within seconds
-- (leased, recorded, completed; attempted, retried). Room left on each page (fillfactor) lets an
-- update that changes no indexed column stay on its page without a new index entry (a HOT update),
-- and vacuuming after 1 % of the rows changed, without the cost delay, clears the dead entries that
-- a claim's `ORDER BY created_at` / `next_at` scan would otherwise step over one by one. These act
-- only while the server's autovacuum is on (its default); `batchgate` warns when it is off.
ALTER TABLE batches SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE deliveries SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
