{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "ringcast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: "<release>-<chart>", or the release name when it already contains the
chart name. Truncated to 63 characters.
*/}}
{{- define "ringcast.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"name-version" for the helm.sh/chart label.
*/}}
{{- define "ringcast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "ringcast.labels" -}}
helm.sh/chart: {{ include "ringcast.chart" . }}
{{ include "ringcast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: sfu
{{- end }}

{{/*
Selector labels (immutable on a Deployment/DaemonSet: never add to them).
*/}}
{{- define "ringcast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ringcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "ringcast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ringcast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the API key and secret.
*/}}
{{- define "ringcast.secretName" -}}
{{- default (include "ringcast.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else repository:tag (tag defaults to the
chart's appVersion).
*/}}
{{- define "ringcast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Shard count, validated: the CPU request is derived from it, so Ringcast's "0 = one per core" is
refused here.
*/}}
{{- define "ringcast.shards" -}}
{{- $shards := int .Values.shards }}
{{- if lt $shards 1 }}
{{- fail "shards must be 1 or more: it sets both the media shard count and the pod's whole-core CPU request" }}
{{- end }}
{{- if gt (add (int .Values.ports.udpBase) $shards) 65536 }}
{{- fail "ports.udpBase + shards exceeds UDP port 65535" }}
{{- end }}
{{- $shards }}
{{- end }}

{{/*
host:port for a listener; IPv6 listen addresses are bracketed.
*/}}
{{- define "ringcast.listen" -}}
{{- $addr := .addr }}
{{- if contains ":" $addr }}
{{- printf "[%s]:%d" $addr (int .port) }}
{{- else }}
{{- printf "%s:%d" $addr (int .port) }}
{{- end }}
{{- end }}
