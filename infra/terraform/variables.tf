variable "region" {
  type        = string
  description = "AWS region of the bucket (CloudFront itself is global)."
  default     = "us-east-1"
}

variable "bucket_name" {
  type        = string
  description = "Bucket holding the published recommendations (RECFLOW_PUBLISH_BUCKET)."
}

variable "publish_prefix" {
  type        = string
  description = "Key prefix of the publishes inside the bucket (RECFLOW_PUBLISH_PREFIX), empty or ending in /."
  default     = ""
}

variable "cors_origins" {
  type        = list(string)
  description = "Origins allowed to fetch recommendation JSON from browsers."
  default     = ["*"]
}

variable "price_class" {
  type        = string
  description = "CloudFront price class (edge locations used)."
  default     = "PriceClass_100"
}

variable "publisher_principal_arns" {
  type        = list(string)
  description = "Principals (e.g. the Airflow worker's role) allowed to assume the publisher role."
}

variable "noncurrent_days" {
  type        = number
  description = "Days before an expired publish's objects are removed for good (retention is done by recflow; this is the safety net)."
  default     = 7
}
