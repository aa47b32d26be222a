from typing import Any

from dify_plugin import ModelProvider
from dify_plugin.entities.model import ModelType


class MockLLMProvider(ModelProvider):
    def validate_provider_credentials(self, credentials: dict[str, Any]) -> None:
        # Raises CredentialsValidateFailedError when {endpoint_url}/models does not answer.
        self.get_model_instance(ModelType.LLM).validate_credentials("mock-model", credentials)
