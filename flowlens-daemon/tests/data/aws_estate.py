"""An AWS estate on moto's server, made with boto3 (AWS's own SDK for Python, which
moto's venv carries), for flowlens-daemon/tests/inventory_aws.rs.

    aws_estate.py setup ENDPOINT       -> JSON: the reader's keys and what was made
    aws_estate.py lock ENDPOINT
    aws_estate.py terminate ENDPOINT KEY SECRET REGION INSTANCE_ID

`setup` makes an IAM user allowed to read EC2 (and to terminate, for the test's
last step), a role for a web identity, two instances and a load balancer's and a
Lambda function's ENIs in eu-west-1, and one instance in us-east-1. `lock` turns on
moto's request authentication: from then on moto checks every request's SigV4
signature against the IAM user's key and the user's policy, as AWS does (moto then
also wants STS's AssumeRoleWithWebIdentity signed, which AWS does not: the web
identity is tried before).
"""

import json
import sys
import urllib.request

import boto3


def client(service, endpoint, region="us-east-1", key="testing", secret="testing"):
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def setup(endpoint):
    iam = client("iam", endpoint)
    iam.create_user(UserName="flowlens")
    iam.put_user_policy(
        UserName="flowlens",
        PolicyName="inventory",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": [
                            "ec2:DescribeInstances",
                            "ec2:DescribeNetworkInterfaces",
                            "ec2:TerminateInstances",
                        ],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName="flowlens")["AccessKey"]
    # The role EKS's IAM roles for service accounts would give the daemon's pod.
    role = iam.create_role(
        RoleName="flowlens-inventory",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.example"},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                    }
                ],
            }
        ),
    )["Role"]
    iam.put_role_policy(
        RoleName="flowlens-inventory",
        PolicyName="inventory",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces"],
                        "Resource": "*",
                    }
                ],
            }
        ),
    )
    made = {
        "key": key["AccessKeyId"],
        "secret": key["SecretAccessKey"],
        "role": role["Arn"],
        "instances": [],
        "enis": [],
    }
    for region, instances in [
        ("eu-west-1", [("payments-api-1", "m5.large"), ("orders-db-1", "r6g.xlarge")]),
        ("us-east-1", [("edge-proxy-1", "c6i.large")]),
    ]:
        ec2 = client("ec2", endpoint, region)
        for name, itype in instances:
            i = ec2.run_instances(
                ImageId="ami-12345678",
                MinCount=1,
                MaxCount=1,
                InstanceType=itype,
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [{"Key": "Name", "Value": name}, {"Key": "team", "Value": "payments"}],
                    }
                ],
            )["Instances"][0]
            made["instances"].append(
                {
                    "id": i["InstanceId"],
                    "name": name,
                    "type": itype,
                    "region": region,
                    "zone": i["Placement"]["AvailabilityZone"],
                    "private": i["PrivateIpAddress"],
                    "public": i.get("PublicIpAddress"),
                    "vpc": i["VpcId"],
                    "subnet": i["SubnetId"],
                }
            )
        if region == "eu-west-1":
            subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
            for kind, description in [
                ("load_balancer", "ELB app/payments-alb/50dc6c495c0c9188"),
                ("lambda", "AWS Lambda VPC ENI-resize-images-3f1c2a7e-9b8d-4c6e-a5f4-0123456789ab"),
            ]:
                n = ec2.create_network_interface(SubnetId=subnet, Description=description)["NetworkInterface"]
                made["enis"].append({"id": n["NetworkInterfaceId"], "kind": kind, "private": n["PrivateIpAddress"]})
    print(json.dumps(made))


def lock(endpoint):
    """From here on every request is authenticated."""
    request = urllib.request.Request(
        endpoint + "/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request).read()


def terminate(endpoint, key, secret, region, instance):
    client("ec2", endpoint, region, key, secret).terminate_instances(InstanceIds=[instance])


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2])
    elif sys.argv[1] == "lock":
        lock(sys.argv[2])
    elif sys.argv[1] == "terminate":
        terminate(*sys.argv[2:7])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
