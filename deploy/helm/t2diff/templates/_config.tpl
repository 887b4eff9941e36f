{{/*
The one config.yaml every process reads (docs/ARCHITECTURE.md "Config"): .Values.config, with the service
endpoints of this release written into the fields that the section classes define. Only sections and keys the
user set, plus the endpoint keys, are written: everything else keeps the code's defaults.
*/}}
{{- define "t2diff.configDoc" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- range $section := list "data" "stream" "features" "trainer" "registry" "index" "serving" -}}
{{- if not (hasKey $cfg $section) -}}{{- $_ := set $cfg $section (dict) -}}{{- end -}}
{{- if kindIs "invalid" (index $cfg $section) -}}{{- $_ := set $cfg $section (dict) -}}{{- end -}}
{{- end -}}
{{- $kafka := include "t2diff.kafkaBootstrap" . -}}
{{- if $kafka -}}
{{- $_ := set $cfg.stream "backend" "kafka" -}}
{{- $_ := set $cfg.stream "bootstrap_servers" $kafka -}}
{{- end -}}
{{- $redis := include "t2diff.redisAddress" . -}}
{{- if $redis -}}
{{- $_ := set $cfg.features "online_store" "redis" -}}
{{- $_ := set $cfg.features "redis_address" $redis -}}
{{- end -}}
{{- $milvus := include "t2diff.milvusUri" . -}}
{{- if $milvus -}}
{{- $_ := set $cfg.index "uri" $milvus -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
