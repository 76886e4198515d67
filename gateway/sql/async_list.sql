-- A page of a group's async jobs, newest first; keyset pagination on (created_at, id): the
-- next page starts after the last row of this one (after = its created_at in microseconds since
-- the epoch, or NULL for the first page; after_id = its id). Fetch one row more than the page to know
-- whether there is a next one.
SELECT id, model_name, floor(extract(epoch FROM created_at))::bigint, status,
       floor(extract(epoch FROM started_at))::bigint, floor(extract(epoch FROM completed_at))::bigint,
       floor(extract(epoch FROM failed_at))::bigint,
       (extract(epoch FROM created_at) * 1000000)::bigint
FROM gateway_asyncjob
WHERE group_id = %(group)s
  AND (%(after)s::bigint IS NULL
       OR (created_at, id) < (to_timestamp(0) + %(after)s::bigint * interval '1 microsecond', %(after_id)s::varchar))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
