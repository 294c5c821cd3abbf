"""Files the local broker is provisioned from: the Maven pom that fetches Kafka's jars and its log4j2 settings."""
