-- What a key spent since the start of the month (committed usage only).
SELECT COALESCE(SUM(cost_micros), 0) FROM usage_usageevent
WHERE api_key_id = %s AND created_at >= %s
