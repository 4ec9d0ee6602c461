"""Live sources: collision warnings from a camera stream, in real time (`crashcast watch`): the source
reader (`source`), the causal loop (`watch`), the event recorder (`recorder`) and
the local web page (`web`)."""
