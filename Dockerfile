FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY inference_gateway inference_gateway
COPY gateway_cli gateway_cli
COPY gateway_common gateway_common
COPY gateway_core gateway_core
COPY http_edge http_edge
RUN pip install --no-cache-dir .
EXPOSE 8080 50051
ENTRYPOINT ["inference-gateway"]
CMD ["serve", "--host", "0.0.0.0"]
