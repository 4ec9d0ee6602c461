"""Live sources: collision warnings from a camera stream, in real time (`crashcast watch`)."""
