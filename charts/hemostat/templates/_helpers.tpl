{{/* Names and labels shared by every template. */}}

{{- define "hemostat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hemostat.fullname" -}}
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

{{- define "hemostat.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hemostat.labels" -}}
{{ include "hemostat.commonLabels" . }}
{{ include "hemostat.selectorLabels" . }}
{{- end -}}

{{- define "hemostat.redis.labels" -}}
{{ include "hemostat.commonLabels" . }}
{{ include "hemostat.redis.selectorLabels" . }}
{{- end -}}

{{- define "hemostat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hemostat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "hemostat.redis.fullname" -}}
{{- printf "%s-redis" (include "hemostat.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hemostat.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hemostat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* The Secret holding the Redis password, or "" when there is none. */}}
{{- define "hemostat.redis.secretName" -}}
{{- if .Values.redis.auth.existingSecret -}}
{{- .Values.redis.auth.existingSecret -}}
{{- else if .Values.redis.enabled -}}
{{- include "hemostat.redis.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The Redis URL the operators use, or "" for none. */}}
{{- define "hemostat.redis.url" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s.%s.svc:6379/0" (include "hemostat.redis.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap of policies, or "" for the built-in policy. */}}
{{- define "hemostat.policiesConfigMap" -}}
{{- if .Values.existingPoliciesConfigMap -}}
{{- .Values.existingPoliciesConfigMap -}}
{{- else if .Values.policies -}}
{{- printf "%s-policies" (include "hemostat.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "hemostat.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Refuses combinations that would be accepted and then ignored. */}}
{{- define "hemostat.validate" -}}
{{- if and .Values.redis.enabled .Values.redis.url -}}
{{- fail "redis.url is for an external Redis: set redis.enabled=false to use it, or leave it empty for the bundled one" -}}
{{- end -}}
{{- if and .Values.operator.acceptExternalRequests (not (include "hemostat.redis.url" .)) -}}
{{- fail "operator.acceptExternalRequests needs Redis: keep redis.enabled=true or set redis.url" -}}
{{- end -}}
{{- if and .Values.policies .Values.existingPoliciesConfigMap -}}
{{- fail "give policies or existingPoliciesConfigMap, not both" -}}
{{- end -}}
{{- if and .Values.redis.auth.existingSecret (not (include "hemostat.redis.url" .)) -}}
{{- fail "redis.auth.existingSecret is set but there is no Redis: keep redis.enabled=true or set redis.url" -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the API token. */}}
{{- define "hemostat.apiTokenSecret" -}}
{{- default (printf "%s-api-token" (include "hemostat.fullname" .)) .Values.api.token.existingSecret -}}
{{- end -}}
