-- A group's balance, purchased credit and auto top-up threshold (-1: no auto top-up).
SELECT a.balance_micros, a.purchased_micros,
       CASE WHEN p.auto_top_up_enabled THEN p.auto_top_up_threshold_micros ELSE -1 END
FROM billing_creditaccount a
LEFT JOIN billing_billingprofile p ON p.group_id = a.group_id
WHERE a.group_id = %s
