-- 0.2: the W3C traceparent of the `batch.run` span that made a batch (when tracing was on), so
-- that a worker in another process links its `batch.process` span to it.
ALTER TABLE batches ADD COLUMN traceparent TEXT;
