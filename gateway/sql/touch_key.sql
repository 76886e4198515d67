UPDATE keys_apikey SET last_used_at = now() WHERE id = %s
