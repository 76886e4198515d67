-- One statement for a whole batch of metered requests: the usage events (a request id already
-- recorded inserts nothing) and, for those inserted, their ledger debits. Debits are inserted in
-- account order, so the ledger trigger locks credit accounts in one global order and concurrent
-- batches cannot deadlock. One array parameter per column; the column lists are filled in from
-- gateway.metering.METER_COLUMNS (built from usage.metrics).
-- The conflict has no target: the event's unique key is (request_id, created_at) on the monthly
-- partitioned table (usage/partitions.py) and was (request_id) before it, so this statement works
-- on both during a deploy. A retried metering carries the same created_at; the debit's unique
-- reference ('usage:' || request_id) allows one debit per request whatever happens (an error,
-- never a second debit). docs/gateway.md, "Exactly once".
WITH ev AS (
    INSERT INTO usage_usageevent ({columns}, created_at)
    SELECT {values}, to_timestamp(r.created)
    FROM unnest({arrays}) AS r({names})
    ON CONFLICT DO NOTHING
    RETURNING request_id, group_id, cost_micros, created_at
)
INSERT INTO billing_ledgerentry (account_id, kind, amount_micros, reference, description, created_at)
SELECT a.id, 'usage', -ev.cost_micros, 'usage:' || ev.request_id, '', ev.created_at
FROM ev JOIN billing_creditaccount a ON a.group_id = ev.group_id
WHERE ev.cost_micros > 0
ORDER BY a.id
