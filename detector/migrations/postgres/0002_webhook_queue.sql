-- Decision changes waiting for the webhooks, queued in the transaction that makes them and
-- posted by the leading detector, whichever detector made them, also after that one died.
-- Rows posted to every webhook (or given up after a day) keep posted_at and are deleted by retention after 31 days.
CREATE TABLE webhook_queue (
    id BIGSERIAL PRIMARY KEY,
    release_id BIGINT NOT NULL REFERENCES releases (id),
    body TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    -- The webhook URLs that have it (or refused it for good): a retry skips them.
    delivered_to TEXT NOT NULL DEFAULT '[]',
    posted_at BIGINT
);
CREATE INDEX webhook_queue_waiting ON webhook_queue (id) WHERE posted_at IS NULL;
