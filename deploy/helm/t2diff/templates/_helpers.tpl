{{/* Names: the usual <release>-<chart> prefix, shortened to the 63-character DNS label limit. */}}
{{- define "t2diff.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "t2diff.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Fullname of a bundled subchart, computed the way the Bitnami and Milvus charts do it. */}}
{{- define "t2diff.subchartFullname" -}}
{{- $root := index . 0 -}}{{- $chart := index . 1 -}}
{{- if contains $chart $root.Release.Name -}}
{{- $root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" $root.Release.Name $chart | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "t2diff.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "t2diff.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: t2diff
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: call with (list $ "trainer"). */}}
{{- define "t2diff.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "t2diff.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "t2diff.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "t2diff.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "t2diff.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "t2diff.claimName" -}}
{{- default (printf "%s-runs" (include "t2diff.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{/* Endpoints: a bundled service wins over an external one; empty means the embedded default. */}}
{{- define "t2diff.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s:9092" (include "t2diff.subchartFullname" (list . "kafka")) -}}
{{- else -}}
{{- .Values.externalKafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{- define "t2diff.redisAddress" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-master:6379" (include "t2diff.subchartFullname" (list . "redis")) -}}
{{- else if .Values.externalRedis.host -}}
{{- printf "%s:%v" .Values.externalRedis.host .Values.externalRedis.port -}}
{{- end -}}
{{- end -}}

{{- define "t2diff.milvusUri" -}}
{{- if .Values.milvus.enabled -}}
{{- printf "http://%s:19530" (include "t2diff.subchartFullname" (list . "milvus")) -}}
{{- else -}}
{{- .Values.externalMilvus.uri -}}
{{- end -}}
{{- end -}}

{{- define "t2diff.configPath" -}}
{{- printf "%s/config.yaml" (trimSuffix "/" .Values.configMountPath) -}}
{{- end -}}

{{/* Container args: the component's `t2diff` sub-command plus the config file. */}}
{{- define "t2diff.args" -}}
{{- $root := index . 0 -}}
{{- toYaml (concat (index . 1) (list "--config" (include "t2diff.configPath" $root))) -}}
{{- end -}}

{{/* Environment shared by every t2diff container: config path, runs dir, then secrets (env wins over file). */}}
{{- define "t2diff.env" -}}
{{- $root := index . 0 -}}
- name: T2DIFF_CONFIG
  value: {{ include "t2diff.configPath" $root | quote }}
- name: T2DIFF_RUNS_DIR
  value: {{ $root.Values.persistence.mountPath | quote }}
- name: T2DIFF_DATA_DIR
  value: {{ $root.Values.datasets.mountPath | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if $root.Values.secrets.existingSecret }}
{{- range $root.Values.secrets.env }}
- name: {{ required "secrets.env[].name is required" .name }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secrets.existingSecret }}
      key: {{ required "secrets.env[].key is required" .key }}
{{- end }}
{{- end }}
{{- with index . 1 }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "t2diff.volumeMounts" -}}
- name: config
  mountPath: {{ .Values.configMountPath }}
  readOnly: true
- name: runs
  mountPath: {{ .Values.persistence.mountPath }}
- name: tmp
  mountPath: /tmp
{{- if .Values.datasets.existingClaim }}
- name: datasets
  mountPath: {{ .Values.datasets.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "t2diff.volumes" -}}
- name: config
  configMap:
    name: {{ include "t2diff.fullname" . }}-config
- name: runs
{{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "t2diff.claimName" . }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- if .Values.datasets.existingClaim }}
- name: datasets
  persistentVolumeClaim:
    claimName: {{ .Values.datasets.existingClaim }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* Pod annotations: roll the pods when config.yaml changes. */}}
{{- define "t2diff.podAnnotations" -}}
{{- $root := index . 0 -}}
checksum/config: {{ include "t2diff.configDoc" $root | sha256sum }}
{{- with index . 1 }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* True (non-empty) when some process keeps SQLite files on the shared volume that other pods also open. */}}
{{- define "t2diff.embeddedStores" -}}
{{- if or (not (include "t2diff.kafkaBootstrap" .)) (not (include "t2diff.redisAddress" .)) -}}true{{- end -}}
{{- end -}}

{{/*
Pod affinity: the component's own, else (embedded stores + colocateEmbedded) "on the node of the other t2diff
pods of this release". The first pod matches its own term, which Kubernetes accepts when no peer runs yet.
Call with (list $ .affinity); renders nothing or an `affinity:` block.
*/}}
{{- define "t2diff.affinity" -}}
{{- $root := index . 0 -}}
{{- $own := index . 1 -}}
{{- if $own -}}
affinity:
  {{- toYaml $own | nindent 2 }}
{{- else if and $root.Values.colocateEmbedded (include "t2diff.embeddedStores" $root) -}}
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            app.kubernetes.io/instance: {{ $root.Release.Name }}
            app.kubernetes.io/name: {{ include "t2diff.name" $root }}
{{- end -}}
{{- end -}}

{{/* Refuse set-ups that cannot work, at render time. */}}
{{- define "t2diff.guards" -}}
{{- if and .Values.kafka.enabled .Values.externalKafka.bootstrapServers -}}
{{- fail "set either kafka.enabled or externalKafka.bootstrapServers, not both" -}}
{{- end -}}
{{- if and .Values.redis.enabled .Values.externalRedis.host -}}
{{- fail "set either redis.enabled or externalRedis.host, not both" -}}
{{- end -}}
{{- if and .Values.milvus.enabled .Values.externalMilvus.uri -}}
{{- fail "set either milvus.enabled or externalMilvus.uri, not both (milvus.enabled is true by default)" -}}
{{- end -}}
{{- if and .Values.trainer.enabled .Values.serving.enabled (not (include "t2diff.milvusUri" .)) -}}
{{- fail "the trainer and serving pods need a shared Milvus server: set milvus.enabled=true or externalMilvus.uri (Milvus Lite listens on 127.0.0.1 of a single pod)" -}}
{{- end -}}
{{- end -}}

{{/* startupProbe: the liveness probe only starts once the process has opened its port. Call with (list $ probe). */}}
{{- define "t2diff.startupProbe" -}}
{{- $root := index . 0 -}}
startupProbe:
  {{- toYaml (index . 1) | nindent 2 }}
  periodSeconds: 10
  failureThreshold: {{ max 1 (div (int $root.Values.startupTimeoutSeconds) 10) }}
{{- end -}}

{{/* "true" when serving runs as a RayService: the flag, or with "auto" whether the cluster knows the CRD. */}}
{{- define "t2diff.useKuberay" -}}
{{- $flag := toString .Values.serving.kuberay.enabled -}}
{{- if eq $flag "auto" -}}
{{- if .Capabilities.APIVersions.Has "ray.io/v1/RayService" -}}true{{- end -}}
{{- else if eq $flag "true" -}}true{{- end -}}
{{- end -}}
