# The generic runner image of the kubernetes provider: Python, uv and runner.py. Every plugin's pod
# runs it; runner.py fetches the package from the connector, builds its environment and serves the
# SDK's serverless mode on port 8080. Build from this folder:
#   docker build -f runner.Dockerfile -t <your registry>/dify-plugin-runner:0.1 .
FROM python:3.12-slim
RUN pip install --no-cache-dir uv && useradd --create-home --uid 10001 runner
COPY plugin_daemon_kubernetes/runner.py /opt/dify/runner.py
USER 10001
ENV DIFY_PLUGIN_WORK_DIR=/tmp/dify-plugin SERVERLESS_PORT=8080
EXPOSE 8080
CMD ["python", "/opt/dify/runner.py"]
