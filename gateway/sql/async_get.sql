-- One async job of a group, in the SDK's AsyncApiChatCompletionsResponseOutput field order.
-- Another group's job is not found, exactly like one that does not exist.
SELECT id, model_name, floor(extract(epoch FROM created_at))::bigint, status,
       floor(extract(epoch FROM started_at))::bigint, floor(extract(epoch FROM completed_at))::bigint,
       floor(extract(epoch FROM failed_at))::bigint, error_message, response
FROM gateway_asyncjob
WHERE id = %s AND group_id = %s
