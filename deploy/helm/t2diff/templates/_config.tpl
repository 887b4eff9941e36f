{{/*
The one config.yaml every process reads (docs/ARCHITECTURE.md "Config"): .Values.config, plus what only the
release knows, written into the fields the section classes define:
  stream.backend/kafka.bootstrap_servers   streaming.settings.StreamSettings / KafkaSettings
  features.online_store/redis_connection_string   feature_store.settings.FeatureSettings
  index.uri                                t2diff.index.IndexSettings
  online_trainer.metrics_port              trainer.online.settings.OnlineTrainerSettings
  serving.host/port/config_path            serving.settings.ServingSettings
Keys the user did not set keep the code's defaults. tests/deploy validates the result with those classes.
*/}}
{{- define "t2diff.configDoc" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- range $section := list "stream" "features" "online_trainer" "registry" "index" "serving" -}}
{{- if not (kindIs "map" (index $cfg $section)) -}}{{- $_ := set $cfg $section (dict) -}}{{- end -}}
{{- end -}}
{{- $kafka := include "t2diff.kafkaBootstrap" . -}}
{{- if $kafka -}}
{{- $_ := set $cfg.stream "backend" "kafka" -}}
{{- $client := default (dict) $cfg.stream.kafka -}}
{{- $servers := list -}}
{{- range splitList "," $kafka -}}{{- if trim . -}}{{- $servers = append $servers (trim .) -}}{{- end -}}{{- end -}}
{{- $_ := set $client "bootstrap_servers" $servers -}}
{{- $_ := set $cfg.stream "kafka" $client -}}
{{- end -}}
{{- $redis := include "t2diff.redisAddress" . -}}
{{- if $redis -}}
{{- $_ := set $cfg.features "online_store" "redis" -}}
{{- $_ := set $cfg.features "redis_connection_string" $redis -}}
{{- end -}}
{{- $milvus := include "t2diff.milvusUri" . -}}
{{- if $milvus -}}
{{- $_ := set $cfg.index "uri" $milvus -}}
{{- end -}}
{{- if .Values.trainer.enabled -}}
{{- $_ := set $cfg.online_trainer "metrics_port" (int .Values.trainer.metricsPort) -}}
{{- end -}}
{{- /* In a pod the API must listen on all interfaces; deployments read the other sections from the file. */ -}}
{{- $_ := set $cfg.serving "host" "0.0.0.0" -}}
{{- $_ := set $cfg.serving "port" (int .Values.serving.httpPort) -}}
{{- $_ := set $cfg.serving "config_path" (include "t2diff.configPath" .) -}}
{{- toYaml $cfg -}}
{{- end -}}
