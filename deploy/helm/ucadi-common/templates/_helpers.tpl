{{/*
Names and labels for every object of a UCADI release, shared by ucadi-central and ucadi-site.
Each helper is included with the including chart's context, so .Chart is that chart. Labels
follow the Kubernetes recommended set (app.kubernetes.io/name, instance, version, component,
part-of, managed-by); a site chart (.Values.site.name set) adds ucadi.io/site.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "ucadi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart name>, or fullnameOverride; 40 characters leave room for suffixes. */}}
{{- define "ucadi.fullname" -}}
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
{{- define "ucadi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods; call with (dict "ctx" $ "component" "aggregator"). */}}
{{- define "ucadi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ucadi.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of a component's objects; same call as ucadi.selectorLabels. */}}
{{- define "ucadi.labels" -}}
helm.sh/chart: {{ include "ucadi.chart" .ctx }}
{{ include "ucadi.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ucadi
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
ucadi.io/federation: {{ .ctx.Values.federation.name }}
{{- with .ctx.Values.site }}
ucadi.io/site: {{ .name }}
{{- end }}
{{- end }}

{{/* The container image reference. */}}
{{- define "ucadi.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the ServiceAccount the pods run as. */}}
{{- define "ucadi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ucadi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Environment common to every container: writable caches under /tmp (the root filesystem is
read-only), Python without bytecode writes, and OpenTelemetry export when configured. Call with
(dict "ctx" $ "component" "trainer").
*/}}
{{- define "ucadi.commonEnv" -}}
{{- $attributes := list (printf "service.namespace=%s" (include "ucadi.fullname" .ctx)) (printf "ucadi.federation=%s" .ctx.Values.federation.name) }}
{{- with .ctx.Values.site }}
{{- $attributes = append $attributes (printf "ucadi.site=%s" .name) }}
{{- end }}
{{- $attributes = append $attributes (printf "k8s.namespace.name=%s" .ctx.Release.Namespace) }}
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
  value: {{ join "," $attributes | quote }}
{{- with .ctx.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* gRPC health probes against the plain health port (kubelet probes cannot do mutual TLS);
call with (dict "ctx" $ "service" "ucadi.v1.Aggregator"). */}}
{{- define "ucadi.probes" -}}
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
{{- define "ucadi.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.metrics | quote }}
prometheus.io/path: /metrics
{{- end }}

{{/*
A PrometheusRule (Prometheus Operator) holding the alert groups named in
.Values.prometheusRule.groups, read verbatim from the chart's files/rules.yaml (a link to
deploy/prometheus/rules.yaml, the file promtool tests), so the chart ships exactly those rules.
*/}}
{{- define "ucadi.prometheusRule" -}}
{{- if .Values.prometheusRule.enabled }}
{{- $wanted := .Values.prometheusRule.groups }}
{{- $groups := list }}
{{- range (.Files.Get "files/rules.yaml" | fromYaml).groups }}
{{- if has .name $wanted }}
{{- $groups = append $groups . }}
{{- end }}
{{- end }}
{{- if ne (len $groups) (len $wanted) }}
{{- fail (printf "prometheusRule.groups %v: each must be one of ucadi-targets, ucadi-central, ucadi-site" $wanted) }}
{{- end }}
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ include "ucadi.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ucadi.labels" (dict "ctx" . "component" "alerts") | nindent 4 }}
    {{- with .Values.prometheusRule.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  groups:
    {{- toYaml $groups | nindent 4 }}
{{- end }}
{{- end }}

{{/*
The Grafana dashboard as a ConfigMap that Grafana's dashboard sidecar (kube-prometheus-stack,
the grafana chart) loads: labelled grafana_dashboard (or .Values.grafanaDashboard.label), from
the chart's files/ucadi-federation.json (a link to deploy/grafana/ucadi-federation.json).
*/}}
{{- define "ucadi.grafanaDashboard" -}}
{{- if .Values.grafanaDashboard.enabled }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "ucadi.fullname" . }}-dashboard
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ucadi.labels" (dict "ctx" . "component" "dashboard") | nindent 4 }}
    {{ .Values.grafanaDashboard.label }}: {{ .Values.grafanaDashboard.labelValue | quote }}
  {{- with .Values.grafanaDashboard.folder }}
  annotations:
    grafana_folder: {{ . | quote }}
  {{- end }}
data:
  ucadi-federation.json: |-
    {{- .Files.Get "files/ucadi-federation.json" | nindent 4 }}
{{- end }}
{{- end }}

{{/*
cert-manager: the Issuer to sign with. With certManager.caSecret, a CA Issuer of this release
signing with the federation CA held in that Secret (tls.crt, tls.key); else
certManager.issuerRef (an Issuer or ClusterIssuer made elsewhere). Call with the root context.
*/}}
{{- define "ucadi.certIssuerRef" -}}
{{- if .Values.certManager.caSecret }}
name: {{ include "ucadi.fullname" . }}-ca
kind: Issuer
{{- else if .Values.certManager.issuerRef.name }}
name: {{ .Values.certManager.issuerRef.name }}
kind: {{ .Values.certManager.issuerRef.kind | default "Issuer" }}
{{- else }}
{{- fail "certManager.enabled needs certManager.caSecret (a CA Issuer is made from it) or certManager.issuerRef.name (an existing Issuer)" }}
{{- end }}
group: cert-manager.io
{{- end }}

{{- define "ucadi.caIssuer" -}}
{{- if and .Values.certManager.enabled .Values.certManager.caSecret }}
apiVersion: cert-manager.io/v1
kind: Issuer
metadata:
  name: {{ include "ucadi.fullname" . }}-ca
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ucadi.labels" (dict "ctx" . "component" "certificates") | nindent 4 }}
spec:
  ca:
    secretName: {{ .Values.certManager.caSecret }}
{{- end }}
{{- end }}

{{/*
A cert-manager Certificate in the form `ucadi pki issue` makes: CN the party's name, OU its
role (the identity the services check), ECDSA P-256, server and client auth; the Secret gets
ca.crt, tls.crt and tls.key, the files the services read. Call with (dict "ctx" $ "component"
"crypto" "name" "crypto" "role" "service" "secret" "..." "dnsNames" (list ...)).
*/}}
{{- define "ucadi.certificate" -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ include "ucadi.fullname" .ctx }}-{{ .component }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "ucadi.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  secretName: {{ .secret }}
  commonName: {{ .name }}
  subject:
    organizationalUnits: [{{ .role }}]
    organizations: [UCADI federation]
  dnsNames:
    {{- toYaml (uniq (prepend .dnsNames .name)) | nindent 4 }}
  duration: {{ .ctx.Values.certManager.duration }}
  renewBefore: {{ .ctx.Values.certManager.renewBefore }}
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  usages: [digital signature, key encipherment, server auth, client auth]
  issuerRef:
    {{- include "ucadi.certIssuerRef" .ctx | nindent 4 }}
{{- end }}

{{/*
`helm test`: a Pod that checks the gRPC health of every service of the release through a
ClusterIP Service per component on the plain health port (the mutual-TLS ports need a
certificate the test does not hold), and a NetworkPolicy letting only that Pod reach those
ports. Call with (dict "ctx" $ "checks" (list (dict "component" "aggregator" "service"
"ucadi.v1.FederationService") ...)), listing only the components the release runs.
*/}}
{{- define "ucadi.healthServices" -}}
{{- $ctx := .ctx }}
{{- range .checks }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ include "ucadi.fullname" $ctx }}-{{ .component }}-health
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "ucadi.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "ucadi.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  ports:
    - name: health
      port: {{ $ctx.Values.ports.health }}
      targetPort: health
      protocol: TCP
{{- end }}
{{- if $ctx.Values.networkPolicy.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "ucadi.fullname" $ctx }}-health-test
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "ucadi.labels" (dict "ctx" $ctx "component" "test") | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "ucadi.name" $ctx }}
      app.kubernetes.io/instance: {{ $ctx.Release.Name }}
  policyTypes: [Ingress]
  ingress:
    - ports:
        - port: health
          protocol: TCP
      from:
        - podSelector:
            matchLabels:
              {{- include "ucadi.selectorLabels" (dict "ctx" $ctx "component" "test") | nindent 14 }}
{{- end }}
{{- end }}

{{- define "ucadi.healthTest" -}}
{{- $ctx := .ctx }}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "ucadi.fullname" $ctx }}-test-health
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "ucadi.labels" (dict "ctx" $ctx "component" "test") | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $ctx.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: health
      image: {{ include "ucadi.image" $ctx }}
      imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
      args:
        - health
        - --timeout
        - "60"
        {{- range .checks }}
        - {{ printf "%s-%s-health:%v=%s" (include "ucadi.fullname" $ctx) .component $ctx.Values.ports.health .service }}
        {{- end }}
      env:
        {{- include "ucadi.commonEnv" (dict "ctx" $ctx "component" "test") | nindent 8 }}
      resources:
        requests: {cpu: 50m, memory: 128Mi}
        limits: {cpu: 500m, memory: 256Mi}
      securityContext:
        {{- toYaml $ctx.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
{{- end }}

{{/*
With more than one replica: spread a component's pods over nodes and zones (soft, so a small
cluster still schedules them), and keep all but one running through voluntary disruptions
(node drains, upgrades). Call with (dict "ctx" $ "component" "crypto" "replicas" n).
*/}}
{{- define "ucadi.topologySpread" -}}
{{- if gt (int .replicas) 1 }}
topologySpreadConstraints:
  {{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "ucadi.selectorLabels" (dict "ctx" $.ctx "component" $.component) | nindent 8 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "ucadi.podDisruptionBudget" -}}
{{- if gt (int .replicas) 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ucadi.fullname" .ctx }}-{{ .component }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "ucadi.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "ucadi.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}
{{- end }}
