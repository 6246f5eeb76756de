#!/usr/bin/env bash
# Build the realtime-ai image with Cloud Build and publish the Flex Template spec.
#   PROJECT   GCP project id                         (required)
#   REGION    Artifact Registry / Dataflow region     (default: us-central1)
#   REPOSITORY Artifact Registry Docker repository    (default: realtime-ai)
#   BUCKET    GCS bucket for the template spec        (required, without gs://)
#   TAG       image tag                               (default: git short sha)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PROJECT:?set PROJECT}" "${BUCKET:?set BUCKET}"
REGION=${REGION:-us-central1}
REPOSITORY=${REPOSITORY:-realtime-ai}
TAG=${TAG:-$(git rev-parse --short HEAD)}
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/realtime-ai:${TAG}"
SPEC="gs://${BUCKET}/templates/realtime-ai.json"

gcloud builds submit --project "$PROJECT" --config templates/cloudbuild.yaml \
  --substitutions "_IMAGE=${IMAGE}" .
gcloud dataflow flex-template build "$SPEC" --project "$PROJECT" \
  --image "$IMAGE" --sdk-language PYTHON --metadata-file templates/metadata.json
echo "template: $SPEC"
echo "image:    $IMAGE"
