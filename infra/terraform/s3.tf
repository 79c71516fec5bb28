# The bucket behind the CDN.

resource "aws_s3_bucket" "recs" {
  #checkov:skip=CKV_AWS_18:Access logs of a bucket only CloudFront reads duplicate the distribution's own logs (cdn.tf).
  #checkov:skip=CKV_AWS_144:Cross-region replication of lists recomputed every publish is cost without recovery value: a lost region republishes.
  #checkov:skip=CKV_AWS_145:SSE-KMS would make ETags differ from the bodies' MD5, which the publisher's verify step compares; SSE-S3 (AES256) encrypts at rest.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events: publishes are driven by Airflow.
  #checkov:skip=CKV_AWS_21:Versions would keep a person's erased list after erasure (jobs/publish/erasure.py deletes at once); a publish is recomputable, and recflow keeps the last RECFLOW_PUBLISH_KEEP publishes for rollback.
  bucket = var.bucket_name
}

resource "aws_s3_bucket_public_access_block" "recs" {
  bucket                  = aws_s3_bucket.recs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "recs" {
  bucket = aws_s3_bucket.recs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# SSE-S3 keeps the ETag equal to the body's MD5, which the publisher's verify step uses
# (SSE-KMS would not).
resource "aws_s3_bucket_server_side_encryption_configuration" "recs" {
  bucket = aws_s3_bucket.recs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

# No versioning, and no expiry by age: erasure (jobs/publish/erasure.py) must remove a
# person's list at once, which old versions would keep, and the live publish may be of
# any age. recflow prunes old publishes (RECFLOW_PUBLISH_KEEP) and stages itself
# (jobs/privacy/retention.py); the bucket only clears what a crash leaves unfinished.
resource "aws_s3_bucket_lifecycle_configuration" "recs" {
  bucket = aws_s3_bucket.recs.id
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_s3_bucket_cors_configuration" "recs" {
  bucket = aws_s3_bucket.recs.id
  cors_rule {
    allowed_methods = ["GET", "HEAD"]
    allowed_origins = var.cors_origins
    allowed_headers = ["*"]
    expose_headers  = ["ETag"]
    max_age_seconds = 86400
  }
}

# Only this distribution may read the bucket, and only the served prefix.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "CloudFrontReadsRecs"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.recs.arn}/${local.recs_path}"]
    principals {
      type        = "Service"
      identifiers = ["cloudfront.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "AWS:SourceArn"
      values   = [aws_cloudfront_distribution.recs.arn]
    }
  }
  statement {
    sid       = "TLSOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.recs.arn, "${aws_s3_bucket.recs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "recs" {
  bucket     = aws_s3_bucket.recs.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.recs]
}
