# The gateway as one image: JRE for the embedded Kafka, the broker jars, the streamforge package.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
 && rm -rf /var/lib/apt/lists/*
ENV STREAMFORGE_CACHE_DIR=/opt/streamforge/cache STREAMFORGE_HOME=/var/lib/streamforge
WORKDIR /opt/streamforge/src
COPY pyproject.toml README.md ./
COPY engine engine
COPY nodes nodes
COPY runtime runtime
RUN pip install --no-cache-dir . \
 && streamforge kafka install \
 && rm -rf /root/.m2
VOLUME /var/lib/streamforge
EXPOSE 9092
ENTRYPOINT ["streamforge"]
CMD ["demo"]
