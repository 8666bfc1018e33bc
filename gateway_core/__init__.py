"""The gRPC core: auth, routing, deadlines, providers."""
