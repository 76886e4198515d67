from __future__ import annotations

import factory
from allauth.account.models import EmailAddress

from accounts.models import User
from groups.models import APIGroup
from members.models import Membership


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery-staple")

    @factory.post_generation
    def verified(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        """Give the user a verified primary e-mail address unless verified=False."""
        obj.save()
        if create and extracted is not False:
            EmailAddress.objects.create(user=obj, email=obj.email, verified=True, primary=True)


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = APIGroup
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Group {n}")
    country = "US"

    @factory.post_generation
    def credit_account(obj, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        """Every group has a credit account, as groups.services.api_group_create makes it."""
        if create:
            from billing.models import CreditAccount

            CreditAccount.objects.get_or_create(group=obj)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    group = factory.SubFactory(GroupFactory)
    user = factory.SubFactory(UserFactory)
    role = "member"
