#!/usr/bin/env bash
# Launch a Dataflow job from the realtime-ai Flex Template.
#   PROJECT, BUCKET, REGION as for build.sh
#   PARAMETERS  comma-separated pipeline options for the job (required), e.g.
#     "transactions=gs://B/in/tx-*.jsonl,metrics=gs://B/in/metrics-*.jsonl,output=gs://B/out/run1"
#   JOB_NAME    default: realtime-ai-<UTC timestamp>
# Extra arguments go to `gcloud dataflow flex-template run` (e.g. --max-workers=4).
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${BUCKET:?set BUCKET}" "${PARAMETERS:?set PARAMETERS}"
REGION=${REGION:-us-central1}
JOB_NAME=${JOB_NAME:-realtime-ai-$(date -u +%Y%m%d-%H%M%S)}

gcloud dataflow flex-template run "$JOB_NAME" --project "$PROJECT" --region "$REGION" \
  --template-file-gcs-location "gs://${BUCKET}/templates/realtime-ai.json" \
  --parameters "$PARAMETERS" \
  --temp-location "gs://${BUCKET}/tmp" --staging-location "gs://${BUCKET}/staging" "$@"
