"""What a job asks: its prompt, its answer's kind, and what each model accepts."""
