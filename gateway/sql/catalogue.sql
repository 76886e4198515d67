-- The enabled models with their prices (the price columns are usage.metrics.PRICES, in order)
-- and, for embeddings models, their dimensions and whether they are contextualized.
SELECT id, name, upstream_base_url, upstream_api_key_env, upstream_model, api, upstream_api,
       {prices}, rate_limit_rpm, dimensions, contextualized
FROM usage_aimodel WHERE enabled ORDER BY name
