-- The effort presets of the Agent API whose model is enabled: name, old names, model, settings.
SELECT p.name, p.aliases, m.name, p.settings
FROM usage_preset p JOIN usage_aimodel m ON m.id = p.model_id
WHERE p.enabled AND m.enabled ORDER BY p.name
