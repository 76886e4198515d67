-- The job a group created with this idempotency key (same fields as async_get.sql).
SELECT id, model_name, floor(extract(epoch FROM created_at))::bigint, status,
       floor(extract(epoch FROM started_at))::bigint, floor(extract(epoch FROM completed_at))::bigint,
       floor(extract(epoch FROM failed_at))::bigint, error_message, response
FROM gateway_asyncjob
WHERE group_id = %s AND idempotency_key = %s
