"""Core web endpoints: health probes, metrics, the OpenAPI document."""
