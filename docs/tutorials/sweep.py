# %% [markdown]
# # sweep

# %%
print(1)
