"""The management plane: Amazon API Gateway's management API (apigateway), its
model and store, OpenAPI import/export, key sync and usage metering. Never
imports fastgate.process."""
