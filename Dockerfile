# The gateway as one image: JRE for the embedded Kafka, the broker jars, the streamforge package, example flows.
# `docker run -p 8080:8080 -v sf:/var/lib/streamforge IMAGE` runs `streamforge up` with flows/simulated_line.json:
# the editor and API at https://localhost:8080 (the CA's fingerprint is printed at start).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
 && rm -rf /var/lib/apt/lists/*
# The control plane serves on 0.0.0.0 over HTTPS (its own CA in /var/lib/streamforge/tls: pin ca.pem); the gateway's
# own port stays on the container's loopback. To publish it too (it wants the token in
# /var/lib/streamforge/http.token for all but /health/live and /health/ready): -e STREAMFORGE_HTTP_HOST=0.0.0.0.
ENV STREAMFORGE_CACHE_DIR=/opt/streamforge/cache STREAMFORGE_HOME=/var/lib/streamforge
WORKDIR /opt/streamforge/src
COPY pyproject.toml README.md ./
COPY engine engine
COPY nodes nodes
COPY runtime runtime
COPY sdk sdk
COPY flows flows
RUN pip install --no-cache-dir . \
 && streamforge kafka install \
 && rm -rf /root/.m2
VOLUME /var/lib/streamforge
EXPOSE 8080
ENTRYPOINT ["streamforge"]
CMD ["up", "--host", "0.0.0.0", "--demo", "/opt/streamforge/src/flows/simulated_line.json"]
