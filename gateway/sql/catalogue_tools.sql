-- The tools the Agent API may run, with their fee (micros per 1,000 invocations).
SELECT name, fee_per_k FROM usage_toolprice WHERE enabled ORDER BY name
