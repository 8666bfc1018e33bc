"""The HTTP edge: translates HTTP dialects into calls on the gRPC core."""
