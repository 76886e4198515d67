-- The KeyChange rows (keys/cache.py) of the last so many seconds, oldest first.
SELECT id, secret_hash, extract(epoch FROM created_at)
FROM keys_keychange WHERE created_at > now() - make_interval(secs => %s)
ORDER BY id
