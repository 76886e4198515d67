-- The hard budgets of these groups (the group's own and its keys'), with each group's time zone
-- and the name a refusal gives the budget (the key's name, or the group's).
SELECT g.id, g.time_zone, b.id, b.api_key_id, COALESCE(k.name, g.name), b.amount_micros, b.window
FROM groups_apigroup g
LEFT JOIN billing_budget b ON b.group_id = g.id AND b.enforcement = 'hard'
LEFT JOIN keys_apikey k ON k.id = b.api_key_id
WHERE g.id = ANY(%s)
