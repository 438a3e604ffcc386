{{/*
Names and labels for every object of the release. Labels follow the Kubernetes recommended set
(app.kubernetes.io/name, instance, version, component, part-of, managed-by).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "ucadi-site.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart name>, or fullnameOverride; 40 characters leave room for suffixes. */}}
{{- define "ucadi-site.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "ucadi-site.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods; call with (dict "ctx" $ "component" "aggregator"). */}}
{{- define "ucadi-site.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ucadi-site.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of a component's objects. */}}
{{- define "ucadi-site.labels" -}}
helm.sh/chart: {{ include "ucadi-site.chart" .ctx }}
{{ include "ucadi-site.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ucadi
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
ucadi.io/federation: {{ .ctx.Values.federation.name }}
ucadi.io/site: {{ .ctx.Values.site.name }}
{{- end }}

{{/* The container image reference. */}}
{{- define "ucadi-site.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The trainer's image: the CUDA variant (Dockerfile.gpu, tag suffix -cuda) when it gets a GPU. */}}
{{- define "ucadi-site.trainerImage" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.trainer.gpu.enabled }}
{{- printf "%s:%s-cuda" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the claim holding published global models (shared by trainer and inference). */}}
{{- define "ucadi-site.modelsClaim" -}}
{{- default (printf "%s-models" (include "ucadi-site.fullname" .)) .Values.models.persistence.existingClaim }}
{{- end }}

{{/* The startup kit Secret; `ucadi pki kit --k8s-secret` names it ucadi-<site>-tls by default. */}}
{{- define "ucadi-site.tlsSecret" -}}
{{- default (printf "ucadi-%s-tls" .Values.site.name) .Values.tls.secretName }}
{{- end }}

{{/* Name of the ServiceAccount the pods run as. */}}
{{- define "ucadi-site.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ucadi-site.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}



{{/*
Environment common to every container: writable caches under /tmp (the root filesystem is
read-only), Python without bytecode writes, and OpenTelemetry export when configured.
*/}}
{{- define "ucadi-site.commonEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: OTEL_SERVICE_NAME
  value: {{ .component }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=%s,ucadi.federation=%s,ucadi.site=%s,k8s.namespace.name=%s" (include "ucadi-site.fullname" .ctx) .ctx.Values.federation.name .ctx.Values.site.name .ctx.Release.Namespace | quote }}
{{- with .ctx.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* gRPC health probes against the plain health port (kubelet probes cannot do mutual TLS). */}}
{{- define "ucadi-site.probes" -}}
startupProbe:
  grpc:
    port: {{ .ctx.Values.ports.health }}
    service: {{ .service | quote }}
  periodSeconds: 5
  failureThreshold: 60
readinessProbe:
  grpc:
    port: {{ .ctx.Values.ports.health }}
    service: {{ .service | quote }}
  periodSeconds: 10
  failureThreshold: 3
livenessProbe:
  grpc:
    port: {{ .ctx.Values.ports.health }}
    service: {{ .service | quote }}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}

{{/* Annotations for Prometheus setups that discover pods without the Operator. */}}
{{- define "ucadi-site.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.metrics | quote }}
prometheus.io/path: /metrics
{{- end }}


{{/* The port of a HOST:PORT endpoint (the trainer's egress policy opens exactly it). */}}
{{- define "ucadi-site.endpointPort" -}}
{{- $parts := splitList ":" . }}
{{- last $parts | int }}
{{- end }}
