-- Create an async chat completions job (gateway/async_jobs.py). A second create with the same
-- idempotency key in the same group inserts nothing (and returns no row): the caller then reads
-- the job that key made. The sweeper leaves a new job alone until lease_until (it is queued now).
INSERT INTO gateway_asyncjob (
    id, group_id, api_key_id, model_id, model_name, request, idempotency_key, status,
    created_at, attempts, lease_until, end_user, tags
)
VALUES (%s, %s, %s, %s, %s, %s, %s, 'CREATED', now(), 0, now() + make_interval(secs => %s),
        %s, %s::jsonb)
ON CONFLICT (group_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, model_name, floor(extract(epoch FROM created_at))::bigint, status,
          NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::jsonb
