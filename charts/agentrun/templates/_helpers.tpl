{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "agentrun.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart's. */}}
{{- define "agentrun.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "agentrun.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "agentrun.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: agentrun
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "agentrun.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentrun.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels plus the component: (dict "ctx" $ "component" "api"). */}}
{{- define "agentrun.componentLabels" -}}
{{ include "agentrun.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference from {repository, tag}; the tag defaults to appVersion. */}}
{{- define "agentrun.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The namespaces whose AgentRuns are reconciled, as a JSON list (release namespace default). */}}
{{- define "agentrun.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- .Values.watchNamespaces | uniq | toJson -}}
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{/* Namespaces that get the runner ServiceAccount (and agents ConfigMap): watched + release. */}}
{{- define "agentrun.runnerNamespaces" -}}
{{- $watched := include "agentrun.watchNamespaces" . | fromJsonArray -}}
{{- prepend $watched .Release.Namespace | uniq | toJson -}}
{{- end -}}

{{- define "agentrun.apiServiceAccount" -}}{{ include "agentrun.fullname" . }}-api{{- end -}}
{{- define "agentrun.operatorServiceAccount" -}}{{ include "agentrun.fullname" . }}-operator{{- end -}}

{{/* Name of the Secret with the API tokens. */}}
{{- define "agentrun.tokensSecret" -}}
{{- default (printf "%s-api-tokens" (include "agentrun.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Name of the Secret with the webhook signing secrets; empty when webhooks are unsigned. */}}
{{- define "agentrun.signingSecret" -}}
{{- if .Values.webhookSigning.existingSecret -}}
{{- .Values.webhookSigning.existingSecret -}}
{{- else if .Values.webhookSigning.generate -}}
{{- printf "%s-webhook-signing" (include "agentrun.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Name of the agent-directory ConfigMap; empty when runner pods use the image's /agents. */}}
{{- define "agentrun.agentsConfigMap" -}}
{{- if .Values.runner.agents.existingConfigMap -}}
{{- .Values.runner.agents.existingConfigMap -}}
{{- else if .Values.runner.agents.files -}}
{{- printf "%s-agents" (include "agentrun.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The API's in-cluster base URL. */}}
{{- define "agentrun.inClusterURL" -}}
{{- printf "http://%s-api.%s.svc:8005" (include "agentrun.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/*
Env vars from a settings map: (dict "prefix" "AGENTRUN_API_" "values" .Values.api.settings).
Each key's snake_case, upper-cased, is appended to the prefix; a map is a nested settings model
(its keys follow `__`); lists and non-string scalars are JSON (pydantic-settings parses them);
null means "the process default" and sets nothing.
*/}}
{{- define "agentrun.settingsEnv" -}}
{{- $prefix := .prefix -}}
{{- range $key := keys .values | sortAlpha }}
{{- $value := get $.values $key -}}
{{- $name := printf "%s%s" $prefix ($key | snakecase | upper) -}}
{{- if kindIs "map" $value }}
{{- include "agentrun.settingsEnv" (dict "prefix" (printf "%s__" $name) "values" $value) }}
{{- else if kindIs "invalid" $value }}
{{- else if kindIs "string" $value }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- else }}
- name: {{ $name }}
  value: {{ toJson $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Env var entry with a JSON value: (dict "name" "X" "value" $v). */}}
{{- define "agentrun.jsonEnv" -}}
- name: {{ .name }}
  value: {{ toJson .value | quote }}
{{- end -}}
