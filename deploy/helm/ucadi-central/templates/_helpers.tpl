{{/*
Names and labels for every object of the release. Labels follow the Kubernetes recommended set
(app.kubernetes.io/name, instance, version, component, part-of, managed-by).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "ucadi-central.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart name>, or fullnameOverride; 40 characters leave room for suffixes. */}}
{{- define "ucadi-central.fullname" -}}
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
{{- define "ucadi-central.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods; call with (dict "ctx" $ "component" "aggregator"). */}}
{{- define "ucadi-central.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ucadi-central.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of a component's objects. */}}
{{- define "ucadi-central.labels" -}}
helm.sh/chart: {{ include "ucadi-central.chart" .ctx }}
{{ include "ucadi-central.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ucadi
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
ucadi.io/federation: {{ .ctx.Values.federation.name }}
{{- end }}

{{/* The container image reference. */}}
{{- define "ucadi-central.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of a component's TLS Secret; call with (dict "ctx" $ "component" "crypto" "secret" "..."). */}}
{{- define "ucadi-central.tlsSecret" -}}
{{- default (printf "%s-%s-tls" (include "ucadi-central.fullname" .ctx) .component) .secret }}
{{- end }}

{{/* Name of the ServiceAccount the pods run as. */}}
{{- define "ucadi-central.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ucadi-central.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The headless Service governing the crypto StatefulSet (stable per-replica DNS names). */}}
{{- define "ucadi-central.cryptoHeadless" -}}
{{- printf "%s-crypto-replicas" (include "ucadi-central.fullname" .) }}
{{- end }}

{{/*
Environment common to every container: writable caches under /tmp (the root filesystem is
read-only), Python without bytecode writes, and OpenTelemetry export when configured.
*/}}
{{- define "ucadi-central.commonEnv" -}}
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
  value: {{ printf "service.namespace=%s,ucadi.federation=%s,k8s.namespace.name=%s" (include "ucadi-central.fullname" .ctx) .ctx.Values.federation.name .ctx.Release.Namespace | quote }}
{{- with .ctx.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* gRPC health probes against the plain health port (kubelet probes cannot do mutual TLS). */}}
{{- define "ucadi-central.probes" -}}
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
{{- define "ucadi-central.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.metrics | quote }}
prometheus.io/path: /metrics
{{- end }}

{{/* Sites reach both public gRPC ports; empty siteCIDRs means any source (mTLS authenticates). */}}
{{- define "ucadi-central.siteSources" -}}
{{- range .Values.networkPolicy.siteCIDRs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- end }}
