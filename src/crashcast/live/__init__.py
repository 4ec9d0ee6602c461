"""Live use of a camera or a stream: the event recorder (`recorder`) and what runs it."""
