-- The key with this secret hash (any status), or whose previous secret it is (rotation grace:
-- active only until that secret's grace end, which also bounds its expiry).
SELECT id, group_id, name, last_four, status, expires_at, monthly_limit_micros,
       allowed_models, allowed_apis, allowed_tools, allowed_ips
FROM keys_apikey WHERE secret_hash = %(hash)s
UNION ALL
SELECT id, group_id, name, last_four,
       CASE WHEN previous_expires_at > now() THEN status ELSE 'revoked' END,
       LEAST(expires_at, previous_expires_at), monthly_limit_micros,
       allowed_models, allowed_apis, allowed_tools, allowed_ips
FROM keys_apikey WHERE previous_secret_hash = %(hash)s
LIMIT 1
