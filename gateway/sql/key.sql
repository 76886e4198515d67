-- The key with this secret hash (any status).
SELECT id, group_id, name, last_four, status, expires_at, monthly_limit_micros
FROM keys_apikey WHERE secret_hash = %s
