FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY inference_gateway inference_gateway
COPY gateway_cli gateway_cli
COPY gateway_common gateway_common
COPY gateway_core gateway_core
COPY http_edge http_edge
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home gateway \
    && mkdir /data && chown 10001 /data
USER 10001
ENV PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080 50051
ENTRYPOINT ["inference-gateway"]
VOLUME /data
CMD ["serve", "--host", "0.0.0.0", "--data-dir", "/data"]
