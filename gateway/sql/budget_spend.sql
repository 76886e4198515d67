-- What a group (or one of its keys, when the second parameter is not null) spent in a window
-- (committed usage only; the window's end is the present).
SELECT COALESCE(SUM(cost_micros), 0) FROM usage_usageevent
WHERE group_id = %(group)s AND created_at >= %(start)s
  AND (%(key)s::bigint IS NULL OR api_key_id = %(key)s::bigint)
