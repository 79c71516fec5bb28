output "bucket" {
  description = "RECFLOW_PUBLISH_BUCKET"
  value       = aws_s3_bucket.recs.bucket
}

output "cloudfront_distribution_id" {
  description = "RECFLOW_CLOUDFRONT_DISTRIBUTION_ID"
  value       = aws_cloudfront_distribution.recs.id
}

output "cdn_base_url" {
  description = "Where clients fetch recs/latest.json and their objects."
  value       = "https://${aws_cloudfront_distribution.recs.domain_name}/${var.publish_prefix}"
}

output "publisher_role_arn" {
  description = "Role the publish DAG's tasks assume (boto3 credential chain)."
  value       = aws_iam_role.publisher.arn
}

output "spark_role_arn" {
  description = "Role Spark assumes for the lake on S3 (empty without lake_bucket_name)."
  value       = local.with_lake ? aws_iam_role.spark[0].arn : ""
}
