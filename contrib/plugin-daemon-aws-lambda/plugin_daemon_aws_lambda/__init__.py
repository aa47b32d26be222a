"""The ``aws_lambda`` provider of the serverless connector."""
