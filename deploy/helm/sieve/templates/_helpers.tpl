{{/*
Helpers of the Sieve chart. The templates use plain Helm: values, include, if/range, toYaml/nindent.
*/}}

{{- define "sieve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: <fullname>-<component>. */}}
{{- define "sieve.name" -}}
{{- printf "%s-%s" (include "sieve.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sieve.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sieve.labels" -}}
{{ include "sieve.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* The Milvus service of the dependency chart (its fullname rule), or the external one. */}}
{{- define "sieve.milvusUri" -}}
{{- if .Values.milvus.enabled -}}
{{- $name := ternary .Release.Name (printf "%s-milvus" .Release.Name) (contains "milvus" .Release.Name) -}}
{{- printf "http://%s:19530" ($name | trunc 63 | trimSuffix "-") -}}
{{- else -}}
{{- required "externalMilvus.uri is required when milvus.enabled is false" .Values.externalMilvus.uri -}}
{{- end -}}
{{- end -}}

{{- define "sieve.s3Endpoint" -}}
{{- if .Values.blobStore.endpointUrl -}}
{{- .Values.blobStore.endpointUrl -}}
{{- else -}}
{{- printf "http://%s-minio:9000" .Release.Name -}}
{{- end -}}
{{- end -}}

{{/* A key of the operator's Secret (never created by this chart). */}}
{{- define "sieve.secretRef" -}}
valueFrom:
  secretKeyRef:
    name: {{ .root.Values.secrets.name }}
    key: {{ .key }}
{{- end -}}

{{/* Where Redis, Milvus and the uploads are: what the API and the workers share. */}}
{{- define "sieve.storeEnv" -}}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  {{- include "sieve.secretRef" (dict "root" . "key" .Values.secrets.keys.redisPassword) | nindent 2 }}
- name: INGEST_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "sieve.name" (dict "root" . "component" "redis")) | quote }}
{{- else }}
- name: INGEST_REDIS_URL
  {{- include "sieve.secretRef" (dict "root" . "key" .Values.secrets.keys.redisUrl) | nindent 2 }}
{{- end }}
- name: RETRIEVAL_MILVUS_URI
  value: {{ include "sieve.milvusUri" . | quote }}
{{- if .Values.externalMilvus.tokenKey }}
- name: RETRIEVAL_MILVUS_TOKEN
  {{- include "sieve.secretRef" (dict "root" . "key" .Values.externalMilvus.tokenKey) | nindent 2 }}
{{- end }}
{{- if eq .Values.blobStore.type "s3" }}
- name: INGEST_BLOB_STORE
  value: s3
- name: INGEST_S3_BUCKET
  value: {{ .Values.blobStore.bucket | quote }}
- name: INGEST_S3_ENDPOINT_URL
  value: {{ include "sieve.s3Endpoint" . | quote }}
- name: AWS_ACCESS_KEY_ID
  {{- include "sieve.secretRef" (dict "root" . "key" .Values.secrets.keys.s3AccessKey) | nindent 2 }}
- name: AWS_SECRET_ACCESS_KEY
  {{- include "sieve.secretRef" (dict "root" . "key" .Values.secrets.keys.s3SecretKey) | nindent 2 }}
{{- else }}
- name: INGEST_DATA_DIR
  value: /data/files
{{- end }}
{{- end -}}

{{/* name/value pairs of a map, sorted by name. */}}
{{- define "sieve.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Volumes of a pod: the models (read-only) and, with blobStore.type=local, the shared uploads.
Called with (dict "root" $ "uploads" true|false). */}}
{{- define "sieve.volumeMounts" -}}
{{- if .root.Values.models.existingClaim }}
- name: models
  mountPath: /models
  readOnly: true
{{- end }}
{{- if and .uploads (eq .root.Values.blobStore.type "local") }}
- name: uploads
  mountPath: /data/files
{{- end }}
{{- end -}}

{{- define "sieve.volumes" -}}
{{- if .root.Values.models.existingClaim }}
- name: models
  persistentVolumeClaim:
    claimName: {{ .root.Values.models.existingClaim }}
    readOnly: true
{{- end }}
{{- if and .uploads (eq .root.Values.blobStore.type "local") }}
- name: uploads
  persistentVolumeClaim:
    claimName: {{ include "sieve.name" (dict "root" .root "component" "uploads") }}
{{- end }}
{{- end -}}

{{/* The rerank servers' addresses for RERANK_URLS: each server by name under a StatefulSet (the API spreads
calls by each one's queue depth), else the Service. */}}
{{- define "sieve.rerankUrls" -}}
{{- $name := include "sieve.name" (dict "root" . "component" "rerank") -}}
{{- if eq .Values.rerank.workload "StatefulSet" -}}
{{- $urls := list -}}
{{- $count := ternary .Values.rerank.hpa.maxReplicas .Values.rerank.replicas .Values.rerank.hpa.enabled | int -}}
{{- range $i := until $count -}}
{{- $urls = append $urls (printf "http://%s-%d.%s-headless:%d" $name $i $name (int $.Values.rerank.port)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- printf "http://%s:%d" $name (int .Values.rerank.port) -}}
{{- end -}}
{{- end -}}

{{- define "sieve.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  fsGroup: 10001
{{- end -}}
