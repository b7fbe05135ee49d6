"""The monitor stage: a report on what the serve stage's feedback store recorded (thumbs-up rate and latency per
version over time, the A/B result with its interval) and on how the incoming prompts drift from the training data."""
