-- The enabled rate limits by API family: name, requests per minute and per second at tiers 0..5
-- (JSON lists, or null).
SELECT name, per_minute, per_second FROM usage_ratelimit WHERE enabled ORDER BY name
