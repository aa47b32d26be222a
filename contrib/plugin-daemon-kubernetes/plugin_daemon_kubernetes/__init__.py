"""The ``kubernetes`` provider of the serverless connector."""
